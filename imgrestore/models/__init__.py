"""Model families: one file per family, shared layers in `blocks`."""
