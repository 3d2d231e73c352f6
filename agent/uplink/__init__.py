"""The MQTT uplink: topic layout (`topics`) and the paho-mqtt v5 client that drains the outbox (`mqtt`)."""
