// PostgreSQL 17 + TimescaleDB in WASM, served on the wire protocol for tests.
// Usage: node server.mjs PORT   (prints "ready PORT" once it accepts connections)
// Limits: one client connection at a time, no COPY FROM STDIN, background jobs never run.
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const port = Number(process.argv[2] ?? 5433)
const db = await PGlite.create({ extensions: { timescaledb } })
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
await server.start()
console.log(`ready ${port}`)

const stop = async () => {
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
