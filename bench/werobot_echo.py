"""Reference for bench/webhook.py: a WeRoBot echo bot (WSGI, run under gunicorn). Not part of vetbot."""

import os

import werobot

robot = werobot.WeRoBot(token=os.environ.get("BENCH_TOKEN", "vetbottoken"), session_storage=False)


@robot.text
def echo(message):  # type: ignore[no-untyped-def]
    return message.content


app = robot.wsgi
