"""vetbot runtime: config, aiohttp app, gateway, dispatcher, WeChat API client, outbox, scheduler, CLI."""
