/** The shared protocol v1 test vectors (docs/PROTOCOL.md section 5), as both decoders' tests read them. */
import { readFileSync } from 'node:fs';

/** One case of test/vectors/protocol-v1.json. */
export interface Vector {
  name: string;
  hex: string;
  frames?: unknown[];
  error?: string;
  incomplete?: boolean;
  maxPayload?: number;
}

/** Every case of the committed vector file. */
export const vectors: Vector[] = JSON.parse(readFileSync(new URL('../vectors/protocol-v1.json', import.meta.url), 'utf8')).cases;
