"""Inference on images: answers, streaming, image sessions, the CLI commands and pictures."""
