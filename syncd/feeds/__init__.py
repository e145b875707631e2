"""Change feeds: sources of "these product keys changed" (database notifications, a
webhook, a message broker) that hand keys to a sink for a targeted sync."""
