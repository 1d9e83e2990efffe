"""Small helpers shared by the commands and the dashboard that belong to no single module."""
