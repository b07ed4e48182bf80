"""Traffic: reading and changing the weighted split of an Istio VirtualService in a manifest file."""
