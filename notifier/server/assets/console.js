// storm-notifier console: swaps in a fresh server-rendered <main> every few seconds and keeps
// the relative times ("12 s ago") current in between. No framework, no build, no other origin.
// The fetch is same-origin with the browser's credentials: a proxy or header extension that
// adds Authorization to the page request adds it here too; the page never holds the token.
(function () {
  "use strict";
  var main = document.getElementById("console");
  var note = document.getElementById("refresh");
  if (!main || !note) return;
  var every = Math.max(1, Number(main.getAttribute("data-refresh")) || 5) * 1000;
  var skew = 0; // client clock minus the server's, from the snapshot shown
  var lastGood = Date.now();
  var timer = null;

  function spoken(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + " s";
    var units = s >= 86400 ? [86400, "d", 3600, "h"] : s >= 3600 ? [3600, "h", 60, "min"] : [60, "min", 1, "s"];
    var big = Math.floor(s / units[0]);
    var rest = Math.floor((s % units[0]) / units[2]);
    return big + " " + units[1] + (rest ? " " + rest + " " + units[3] : "");
  }

  function sync() {
    var snap = main.querySelector(".snapshot");
    var at = snap ? Date.parse(snap.getAttribute("data-generated")) : NaN;
    skew = isNaN(at) ? 0 : Date.now() - at;
  }

  function tick() {
    var now = Date.now() - skew;
    var times = main.querySelectorAll("time[data-rel]");
    for (var i = 0; i < times.length; i++) {
      var at = Date.parse(times[i].getAttribute("datetime"));
      if (isNaN(at)) continue;
      times[i].textContent = now - at < 1000 ? "just now" : spoken(now - at) + " ago";
    }
  }

  function say(text, failed) {
    note.textContent = text;
    note.className = failed ? "refresh failed" : "refresh";
    main.className = failed ? "stale" : "";
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, every);
  }

  function refresh() {
    if (document.hidden) return schedule();
    var url = window.location.pathname + "?fragment=1";
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.text().then(function (body) {
          if (!response.ok) {
            var why = response.status === 401 ? "not authorised" : body.trim().slice(0, 200);
            throw new Error("HTTP " + response.status + (why ? ": " + why : ""));
          }
          return body;
        });
      })
      .then(function (body) {
        main.innerHTML = body; // server-rendered, every value escaped there
        lastGood = Date.now();
        sync();
        tick();
        say("live, every " + every / 1000 + " s", false);
      })
      .catch(function (error) {
        say("refresh failed (" + error.message + "); showing data from " + spoken(Date.now() - lastGood) + " ago", true);
      })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
  sync();
  say("live, every " + every / 1000 + " s", false);
  setInterval(tick, 1000);
  schedule();
})();
