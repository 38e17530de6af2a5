"""Certificate Transparency: read logs, verify them, watch them for the sites\x27 names."""
