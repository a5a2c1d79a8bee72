"""Scenario 5's pieces: the purchase workload, the tutorial's thread-per-listener consumer, and a
counting wrapper that runs eventbus's ``apps.olympics`` once it exists."""
