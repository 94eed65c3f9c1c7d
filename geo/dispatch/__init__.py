"""Dispatch: responders and their positions, the nearest responders, routing on the road network."""
