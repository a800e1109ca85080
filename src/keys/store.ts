/**
 * The key files of one REX user, in the state directory (rex.rc
 * `state-directory`, default ~/.rex):
 *
 *   keys/NAME.key     private key, PKCS#8 PEM, mode 0600 (refused if group or others can read it)
 *   keys/NAME.crt     its self-signed certificate
 *   known/ID.crt      keys this user trusts (learnt by enrollment), with a comment header
 *   grants            who may use this host as this user (src/keys/grants.ts)
 *   tokens            enrollment tokens issued here, as hashes (src/keys/tokens.ts)
 *   distribute.pending  hosts `rex_key --distribute` could not reach, retried next run
 *
 * See docs/KEYS.md.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, RexError } from '../util/errors.js';
import { certInfo, createKeyMaterial, privateKeyId } from './certs.js';
import { compactId, isIdPrefix, parseId } from './id.js';
import { isHostKeyName, parseIdentityName } from './identity.js';

/** One of this user's own identities, with its private key loaded. */
export interface OwnIdentity {
  name: string;
  id: string;
  keyPem: string;
  certPem: string;
  keyFile: string;
  certFile: string;
}

/** A key this user trusts. */
export interface KnownKey {
  name: string;
  id: string;
  certPem: string;
  file: string;
  added?: string;
  /** How it was learnt: `token` (enrolled with an invite), `invite` (the server we enrolled with), `rotation`. */
  via?: string;
}

/** Writes a file atomically (temp file + rename) with `mode`, so readers never see half of it. */
export function writeFileAtomic(file: string, data: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, file);
}

/**
 * Refuses a private file that group or others can read, or that another user
 * owns: such a key may already be in someone else's hands.
 */
export function checkPrivateFile(file: string, what = 'private key'): void {
  const st = lstatSync(file);
  if (!st.isFile()) {
    throw new RexError(ErrorCodes.KEY_PERMISSIONS, `${what} ${file} is not a regular file`, { where: file, hint: 'replace it with the real key file' });
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new RexError(ErrorCodes.KEY_PERMISSIONS, `${what} ${file} belongs to uid ${st.uid}, not to you (uid ${uid})`, { where: file, hint: `run: chown ${uid} ${file}` });
  }
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    throw new RexError(ErrorCodes.KEY_PERMISSIONS, `${what} ${file} is accessible by group or others (mode ${mode}); refusing to use it`, {
      where: file,
      hint: `run: chmod 600 ${file}   (and consider the key exposed: rex_key --create --force makes a new one)`,
    });
  }
}

/** Reads one known/ID.crt file: its certificate and comment header. */
function readKnown(file: string): KnownKey {
  const text = readFileSync(file, 'utf8');
  const info = certInfo(text, file);
  const meta = (k: string) => new RegExp(`^# ${k}: (.*)$`, 'm').exec(text)?.[1];
  const k: KnownKey = { name: info.name, id: info.id, certPem: info.pem, file };
  const added = meta('added');
  const via = meta('via');
  if (added) k.added = added;
  if (via) k.via = via;
  return k;
}

function programOf(name: string): string | undefined {
  const p = parseIdentityName(name);
  return typeof p === 'string' ? undefined : p.program;
}

/** This user's keys, trusted keys and their files under one state directory. */
export class KeyStore {
  readonly keysDir: string;
  readonly knownDir: string;
  readonly grantsFile: string;
  readonly tokensFile: string;
  readonly pendingFile: string;

  constructor(readonly stateDir: string) {
    this.keysDir = join(stateDir, 'keys');
    this.knownDir = join(stateDir, 'known');
    this.grantsFile = join(stateDir, 'grants');
    this.tokensFile = join(stateDir, 'tokens');
    this.pendingFile = join(stateDir, 'distribute.pending');
  }

  /** Creates the state directory and its key directories as 0700. */
  ensureDirs(): void {
    // The state directory is made private when new; an existing one keeps its mode (the root installation's
    // /var/lib/rex is 0755 so that users reach their directories under users/): keys/ and known/ are always 0700.
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    for (const d of [this.keysDir, this.knownDir]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      if ((lstatSync(d).mode & 0o077) !== 0) chmodSync(d, 0o700);
    }
  }

  /** Path of the private key of own identity `name`. */
  keyFile(name: string): string {
    return join(this.keysDir, `${name}.key`);
  }

  /** Path of the certificate of own identity `name`. */
  certFile(name: string): string {
    return join(this.keysDir, `${name}.crt`);
  }

  /** True when an own key for `name` exists. */
  has(name: string): boolean {
    return existsSync(this.keyFile(name));
  }

  /**
   * Makes a key pair for `name`. An existing key is kept unless `force`; a
   * replaced one is moved to NAME.key.prev so that `rex_key --distribute` can
   * still authenticate with it to hosts that know only the old key.
   */
  async create(name: string, opts: { force?: boolean } = {}): Promise<OwnIdentity> {
    const parsed = isHostKeyName(name) ? undefined : parseIdentityName(name);
    if (typeof parsed === 'string') throw new RexError(ErrorCodes.USAGE, parsed);
    this.ensureDirs();
    const keyFile = this.keyFile(name);
    const certFile = this.certFile(name);
    if (existsSync(keyFile)) {
      if (!opts.force) {
        const cur = this.load(name);
        throw new RexError(ErrorCodes.KEY_EXISTS, `${name} already has a key (ID ${cur.id}) in ${keyFile}`, {
          where: keyFile,
          hint: 'keep it, or replace it with `rex_key --create --force` (then `rex_key --distribute` to send the new key)',
        });
      }
      renameSync(keyFile, `${keyFile}.prev`);
      if (existsSync(certFile)) renameSync(certFile, `${certFile}.prev`);
    }
    const m = await createKeyMaterial(name);
    writeFileAtomic(keyFile, m.keyPem, 0o600);
    writeFileAtomic(certFile, m.certPem, 0o644);
    return { name, id: m.id, keyPem: m.keyPem, certPem: m.certPem, keyFile, certFile };
  }

  /** Loads an own identity (or its previous key with `prev`), checking permissions and that key and certificate match. */
  load(name: string, opts: { prev?: boolean } = {}): OwnIdentity {
    const suffix = opts.prev ? '.prev' : '';
    const keyFile = this.keyFile(name) + suffix;
    const certFile = this.certFile(name) + suffix;
    if (!existsSync(keyFile)) {
      throw new RexError(ErrorCodes.KEY_MISSING, `no key for ${name}${opts.prev ? ' (previous)' : ''}: ${keyFile} does not exist`, {
        where: keyFile,
        hint: `create it with \`rex_key --create${programOf(name) ? ` --program ${programOf(name)}` : ''}\``,
      });
    }
    checkPrivateFile(keyFile);
    const keyPem = readFileSync(keyFile, 'utf8');
    const certPem = readFileSync(certFile, 'utf8');
    const info = certInfo(certPem, certFile);
    const kid = privateKeyId(keyPem, keyFile);
    if (kid !== info.id) {
      throw new RexError(ErrorCodes.KEY_INVALID, `${certFile} (ID ${info.id}) does not belong to the key ${keyFile} (ID ${kid})`, {
        where: certFile,
        hint: 'restore the matching pair, or make a new one with `rex_key --create --force`',
      });
    }
    if (info.name !== name) {
      throw new RexError(ErrorCodes.KEY_INVALID, `${certFile} names "${info.name}", expected "${name}"`, { where: certFile });
    }
    return { name, id: info.id, keyPem, certPem, keyFile, certFile };
  }

  /** Names of this user's own identities (from keys/*.key). */
  ownNames(): string[] {
    if (!existsSync(this.keysDir)) return [];
    return readdirSync(this.keysDir)
      .filter((f) => f.endsWith('.key'))
      .map((f) => f.slice(0, -4))
      .sort();
  }

  // ------------------------------------------------------------ trusted keys

  /** Stores a trusted key; replaces an earlier file for the same ID. */
  addKnown(cert: string | Uint8Array, via: string, where = 'certificate'): KnownKey {
    this.ensureDirs();
    const info = certInfo(cert, where);
    const parsed = isHostKeyName(info.name) ? undefined : parseIdentityName(info.name);
    if (typeof parsed === 'string') throw new RexError(ErrorCodes.KEY_INVALID, `${where}: subject CN ${parsed}`, { where });
    const file = join(this.knownDir, `${compactId(info.id)}.crt`);
    const added = new Date().toISOString();
    const text = [`# name: ${info.name}`, `# id: ${info.id}`, `# added: ${added}`, `# via: ${via}`, info.pem.trim(), ''].join('\n');
    writeFileAtomic(file, text, 0o644);
    return { name: info.name, id: info.id, certPem: info.pem, file, added, via };
  }

  /** Every trusted key; unreadable files are skipped (and named in `problems`). */
  known(problems: string[] = []): KnownKey[] {
    if (!existsSync(this.knownDir)) return [];
    const out: KnownKey[] = [];
    for (const f of readdirSync(this.knownDir).sort()) {
      if (!f.endsWith('.crt')) continue;
      const file = join(this.knownDir, f);
      try {
        out.push(readKnown(file));
      } catch (e) {
        problems.push(`${file}: ${(e as Error).message}`);
      }
    }
    return out;
  }

  /** The trusted key with this ID (one file read: rexd asks on every TLS connection). */
  knownById(id: string): KnownKey | undefined {
    const file = join(this.knownDir, `${compactId(id)}.crt`);
    try {
      const k = readKnown(file);
      return k.id === id ? k : undefined;
    } catch {
      return undefined;
    }
  }

  /** Removes a trusted key. */
  removeKnown(id: string): boolean {
    const file = join(this.knownDir, `${compactId(id)}.crt`);
    if (!existsSync(file)) return false;
    rmSync(file);
    return true;
  }

  /**
   * Finds keys by NAME or ID as a user types it: an identity name (HOST.USER or
   * HOST.USER.PROGRAM), a full ID, or an unambiguous ID prefix of 8+ characters.
   * Own keys count too, so that `--grant` works for one's own other identities.
   */
  resolve(nameOrId: string): KnownKey[] {
    const all = this.known();
    if (nameOrId.includes('.')) return all.filter((k) => k.name === nameOrId);
    const full = parseId(nameOrId);
    if (full) return all.filter((k) => k.id === full);
    if (isIdPrefix(nameOrId)) {
      const p = nameOrId.replace(/-/g, '').toUpperCase();
      return all.filter((k) => compactId(k.id).startsWith(p));
    }
    return [];
  }
}
