"""Publisher processes: the paced one of the latency scenario and the publish-API benchmark."""
