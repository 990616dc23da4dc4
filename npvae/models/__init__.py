"""Separation models built from npvae layers."""
