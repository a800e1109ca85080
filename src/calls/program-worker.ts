/**
 * The worker thread of loadProgramOffThread (src/calls/programs.ts): reads one
 * program's definitions and posts them back, or the error's message.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadProgram, type ProgramConfig, type WorkerAnswer } from './programs.js';

const c = workerData as ProgramConfig;
let answer: WorkerAnswer;
try {
  answer = { ok: await loadProgram(c) };
} catch (e) {
  answer = { error: (e as Error).message };
}
parentPort!.postMessage(answer);
