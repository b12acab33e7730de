"""The `data/` folder and where it comes from: reading and writing it and `data.dvc` (`folder`), getting
MNIST or the bundled digits into it (`ingest`), and DVC remotes and their credentials (`remote`)."""
