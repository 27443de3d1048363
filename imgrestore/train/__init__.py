"""Training: data and degradations, tasks, the shared loop."""
