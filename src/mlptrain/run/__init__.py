"""One training run as a library object: build it (session), drive it (runner), show it
(console) and record it (recorder)."""
