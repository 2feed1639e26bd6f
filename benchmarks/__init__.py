"""cifar_edge.benchmarks."""
