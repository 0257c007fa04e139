"""Tracklet datasets, frame sampling plans and sequence transforms."""
