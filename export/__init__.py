"""cifar_edge.export."""
