"""Sinks deliver events from the cluster streams to the outside world."""
