"""`mnist-lab board`: a local experiments page over this repository (git history, DVC experiments, the
committed reports) with its JSON API (`app`), what it shows (`views`), and a static export (`export`)."""
