#!/usr/bin/env bash
# `make run`: the server (`vidmill serve`) is not built yet; until it is,
# this makes a short sample clip and runs the offline commands on it, so a
# newcomer sees the pipelines work end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/vidmill
work=data/demo
mkdir -p "$work"
if [ ! -s "$work/sample.webm" ]; then
  gst-launch-1.0 -q videotestsrc num-buffers=150 pattern=smpte horizontal-speed=3 \
    ! video/x-raw,width=1280,height=720,framerate=30/1 ! vp8enc deadline=1 \
    ! webmmux name=mux ! filesink location="$work/sample.webm" \
    audiotestsrc num-buffers=500 samplesperbuffer=480 ! audioconvert ! vorbisenc ! queue ! mux.
fi
set -x
"$bin" probe "$work/sample.webm"
"$bin" convert "$work/sample.webm" "$work/sample.mp4"
"$bin" frames "$work/sample.webm" -o "$work/frames.zip" --every 1
"$bin" poster "$work/sample.webm" "$work/poster.jpg"
set +x
echo "outputs are in $work/ (the HTTP server arrives with \`vidmill serve\`)"
