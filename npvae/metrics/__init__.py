"""Separation quality metrics for images and audio."""
