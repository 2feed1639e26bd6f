"""cifar_edge.train: the model registry and `cifar-train`."""
