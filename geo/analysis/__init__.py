"""Analysis: coverage of the district by responders, stationing proposals and incident hotspots."""
