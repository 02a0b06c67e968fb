// Uploads a file to vidmill with tus-js-client, the stock tus client (the
// one Uppy uses), as a Node or browser app would. Prints one JSON line:
// {"url": ..., "offset": ..., "done": true|false}.
//
//   node tus-upload.mjs ENDPOINT TOKEN FILE [--chunk BYTES]
//        [--stop-after BYTES] [--resume UPLOAD_URL] [--meta KEY=VALUE ...]
import fs from 'node:fs';
import path from 'node:path';
import { Upload } from 'tus-js-client';

const [endpoint, token, file, ...rest] = process.argv.slice(2);
const options = { chunk: 64 * 1024, stopAfter: null, resume: null, meta: {} };
for (let i = 0; i < rest.length; i += 2) {
  const [flag, value] = [rest[i], rest[i + 1]];
  if (flag === '--chunk') options.chunk = Number(value);
  else if (flag === '--stop-after') options.stopAfter = Number(value);
  else if (flag === '--resume') options.resume = value;
  else if (flag === '--meta') {
    const [k, v] = value.split('=');
    options.meta[k] = v;
  } else throw new Error(`unknown flag ${flag}`);
}

const bytes = fs.readFileSync(file);
const report = (upload, offset, done) => {
  console.log(JSON.stringify({ url: upload.url, offset, done }));
};

const upload = new Upload(bytes, {
  endpoint,
  uploadUrl: options.resume,
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: path.basename(file), filetype: 'video/webm', ...options.meta },
  chunkSize: options.chunk,
  retryDelays: [0, 200, 1000],
  onProgress(sent) {
    if (options.stopAfter !== null && sent >= options.stopAfter) {
      upload.abort(false).then(() => {
        report(upload, sent, false);
        process.exit(0);
      });
    }
  },
  onError(error) {
    console.error(String(error));
    process.exit(1);
  },
  onSuccess() {
    report(upload, bytes.length, true);
    process.exit(0);
  },
});
upload.start();
