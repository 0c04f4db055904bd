"""The app layer: user-facing front ends (the web server; the CLI and demo move here too) over the library."""
