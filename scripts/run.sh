#!/usr/bin/env bash
# `make run`: starts vidmill on its built-in defaults (SQLite and objects
# under ./data, listening on 127.0.0.1:8080) after printing a development
# token and how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/vidmill
token=$("$bin" token --sub dev --ttl 24h)
listen=${VIDMILL__SERVER__LISTEN:-127.0.0.1:8080}
cat <<MSG

  vidmill is starting on http://$listen

  Open the web page, signed in:

    http://$listen/#token=$token

  A development token (user "dev", valid 24 h):

    export TOKEN=$token

  Upload a video and watch it:

    curl -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: video/mp4' \\
         --data-binary @your-video.mp4 "http://$listen/v1/videos?filename=your-video.mp4"
    curl -H "Authorization: Bearer \$TOKEN" http://$listen/v1/videos

  Live events: ws://$listen/v1/events?access_token=\$TOKEN
  The video JSON carries signed URLs: open outputs.mp4.url in a browser to play it.

MSG
exec "$bin" serve
