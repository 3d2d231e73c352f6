"""ECG signal processing on the gateway: raw single-lead ECG samples in, heart beats (R peaks) out."""
