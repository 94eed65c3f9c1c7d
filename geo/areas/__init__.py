"""Areas: the district → street → community → grid hierarchy, point lookup, and grid codes."""
