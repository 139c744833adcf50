"""Publishing: assembling a bundle from the stage outputs, the atomic CURRENT switch,
pruning and rollback, and the analysts' warehouse rebuilt for the live bundle."""
