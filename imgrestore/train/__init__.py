"""Training: the shared loop, and each task's recipe (model, loss,
provenance); the training pairs and the evaluation are the task's (`tasks/`)."""
