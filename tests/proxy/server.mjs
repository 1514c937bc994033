// A real HTTP proxy (the npm package `proxy`, "think Squid", installed by
// scripts/test under target/test-deps) that demands Basic proxy credentials,
// for the connection tests of `proxy` execution mode.
//
//   node tests/proxy/server.mjs <path to proxy's dist/proxy.js> <user> <password>
//
// Prints `listening http://127.0.0.1:PORT`, then one `proxied <method> <url>`
// line per request it forwards.
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const { createProxy } = await import(pathToFileURL(process.argv[2]).href);
const [user, password] = [process.argv[3], process.argv[4]];
const expected = 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');

const server = createProxy(http.createServer());
server.authenticate = (req) => {
  const ok = req.headers['proxy-authorization'] === expected;
  if (ok) console.log(`proxied ${req.method} ${req.url}`);
  return ok;
};
server.listen(0, '127.0.0.1', () => {
  console.log(`listening http://127.0.0.1:${server.address().port}`);
});
