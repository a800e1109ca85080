/**
 * Users somewhere else, as the trust tests make them: each has a key store of
 * its own (a directory under the test's temp dir) and a key for one identity,
 * and is enrolled with a host of the test cluster through a real invite token,
 * exactly as `rex_key --invite --for NAME` and `rex_key --distribute --token`
 * would do it.
 */
import { join } from 'node:path';
import type { ServerEntry } from '../../src/config/index.js';
import { invite } from '../../src/keys/admin.js';
import { enrollWith, type EnrollResult } from '../../src/keys/enroll.js';
import { KeyStore, type OwnIdentity } from '../../src/keys/store.js';
import { parseToken } from '../../src/keys/tokens.js';

/** One user elsewhere: its store and its key. */
export interface Outsider {
  store: KeyStore;
  own: OwnIdentity;
}

/** A host of the cluster as the outsiders meet it: its own key store and identity, and where it listens. */
export interface Target {
  store: KeyStore;
  /** Its identity, HOST.USER. */
  name: string;
  entry: ServerEntry;
}

/** Makes outsiders, each in a fresh store under `dir`. */
export class Outsiders {
  private n = 0;

  constructor(private readonly dir: string) {}

  /** A key for `name`; with `trust`, that host's key is known to it (so it can pin the host without enrolling). */
  async key(name: string, trust?: Target): Promise<Outsider> {
    const store = new KeyStore(join(this.dir, `u${++this.n}`));
    const own = await store.create(name);
    if (trust) store.addKnown(trust.store.load(trust.name).certPem, 'test');
    return { store, own };
  }

  /** A key for `name` that `on` enrolled through a token issued for that name; also returns what `on` answered. */
  async enrolled(name: string, on: Target): Promise<Outsider & { result: EnrollResult }> {
    const who = await this.key(name);
    const { token } = invite(on.store, on.store.load(on.name), 60_000, { subject: name });
    const result = await enrollWith({ entry: on.entry, own: who.own, store: who.store, token: parseToken(token) });
    return { ...who, result };
  }
}
