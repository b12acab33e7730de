"""What every layer above the core shares with the operating system: atomic file writes and JSON
(`files`), and secrets kept out of everything printed or stored (`redact`)."""
