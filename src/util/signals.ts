/** Signal numbers and names on this host (node's os.constants.signals). */
import { constants } from 'node:os';

/** Signal numbers to names; the first name wins where two share a number (SIGABRT, not SIGIOT; SIGIO, not SIGPOLL). */
const NAMES = new Map<number, NodeJS.Signals>();
for (const [name, n] of Object.entries(constants.signals)) if (!NAMES.has(n)) NAMES.set(n, name as NodeJS.Signals);

/** The name of signal `n` ("SIGTERM"), or undefined for a number that is no signal here. */
export function signalName(n: number): NodeJS.Signals | undefined {
  return NAMES.get(n);
}
