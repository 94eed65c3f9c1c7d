"""The `wangge` command line and the project-local PostGIS cluster: a peer of the API over the same services."""
