"""One importer per upstream root-program format."""
