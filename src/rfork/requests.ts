/**
 * RFORK in rexd's request table (src/daemon/dispatch.ts): authorized as EXEC
 * is (a peer's grant; a peer granted only one program may send no image), and
 * served by rfork's origin side (origin.ts), which places the image and relays
 * it through EXEC's machinery. Both are loaded on first use (Features of
 * dispatch.ts): this module imports none of their code, only EXEC's limit.
 */
import type { RexConfig } from '../config/index.js';
import { Feature, type RequestTable } from '../daemon/dispatch.js';
import { execLimit } from '../exec/executor/requests.js';
import type { ExecService } from '../exec/executor/service.js';

/** Registers RFORK, served through `exec`; `self` is this host's identity name (HOST.USER). */
export function registerRfork(table: RequestTable, exec: Feature<ExecService>, config: Pick<RexConfig, 'programs'>, self: string): void {
  // The origin side with the image reader: only what an RFORK needs.
  const origin = table.feature(new Feature('rfork', () => import('./origin.js')));
  table.register('RFORK', {
    roles: ['client', 'peer'],
    auth: 'grant',
    // It restores the user's process here, or relays the image to a peer over this host's key.
    privilege: ['user', 'host-key'],
    newWork: true,
    // The image's path is a /proc descriptor: the row says what it was (bytes_in counts an image sent inline).
    target: () => 'rfork image',
    handler: async (m, req) => {
      const s = req.session;
      const limit = execLimit(req, config, self);
      const [service, { serveRfork }] = await Promise.all([exec.get(), origin.get()]);
      return serveRfork(
        service,
        m,
        { local: s.state === 'client', ...(s.state === 'client' && s.program ? { program: s.program } : {}), ...(s.state === 'client' && s.pid ? { pid: s.pid } : {}), ...(limit ? { limit } : {}) },
        req.from.conn,
      );
    },
  });
}
