"""What is planned: the instance (layers, devices, constraints), sizes and units, the memory model, the plan."""
