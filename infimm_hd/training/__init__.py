"""Training: the sample contract, the streaming loader, the loop, checkpoints and the trainable-set declarations.

The model package knows nothing of this one; stage scripts in `stages/` put the pieces together.
"""
