// Serves a folder on 127.0.0.1 and prints its URL (one line); for running the bench page inside
// a network namespace (`ip netns exec <ns> node serve.mjs <dir>`).
import { serve } from '../../tests/e2e/lib.mjs';

const server = await serve(process.argv[2]);
process.stdout.write(`${server.url}\n`);
