"""Thin entry points: job spec / flags in, pipeline or engine calls out."""
