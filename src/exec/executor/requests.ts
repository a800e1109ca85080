/**
 * EXEC in rexd's request table (src/daemon/dispatch.ts): who may send it, how
 * it is authorized, and what a peer granted only one program may run
 * (limit.ts). The service itself (service.ts) runs it here or relays it to the
 * placed host; it is loaded on first use (a Feature of dispatch.ts), so this
 * module imports only types.
 */
import type { RexConfig } from '../../config/index.js';
import type { Feature, Request, RequestTable } from '../../daemon/dispatch.js';
import type { ExecLimit } from './limit.js';
import type { ExecService } from './service.js';

/** Registers EXEC, served by `exec`; `self` is this host's identity name (HOST.USER). */
export function registerExec(table: RequestTable, exec: Feature<ExecService>, config: Pick<RexConfig, 'programs'>, self: string): void {
  table.register('EXEC', {
    roles: ['client', 'peer'],
    auth: 'grant',
    // It starts the user's program here, or relays it to a peer over this host's key.
    privilege: ['user', 'host-key'],
    newWork: true,
    target: (m) => m.path,
    handler: async (m, req) => {
      const s = req.session;
      const limit = execLimit(req, config, self);
      return (await exec.get()).serve(
        m,
        { local: s.state === 'client', ...(s.state === 'client' && s.program ? { program: s.program } : {}), ...(s.state === 'client' && s.pid ? { pid: s.pid } : {}), ...(limit ? { limit } : {}) },
        req.from.conn,
      );
    },
  });
}

/**
 * What a peer may run by EXEC: anything its user may, unless it is authorized
 * only for one program (a program key, or a grant with program=P): then only
 * P's executables from this host's rex.rc.
 */
export function execLimit(req: Request, config: Pick<RexConfig, 'programs'>, self: string): ExecLimit | undefined {
  const s = req.session;
  if (s.state !== 'peer' || !req.access) return undefined;
  const { who, grant } = req.access;
  const program = s.programKey ? who.program : grant.program;
  if (program === undefined) return undefined;
  const entry = config.programs.find((p) => p.name === program);
  return {
    program,
    who: `${who.name}.${program} (key ${who.id})`,
    name: who.name,
    host: self,
    hasEntry: entry !== undefined,
    ...(entry?.executables ? { executables: entry.executables } : {}),
    ...(grant.functions && grant.program === program ? { functions: grant.functions } : {}),
  };
}
