/** Shared helpers for the configuration tests. */
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { ConfigError } from '../../src/config/index.js';

/** The fixture directory of the configuration tests. */
export const FIXTURES = fileURLToPath(new URL('../fixtures/config/', import.meta.url));

/** A fixed environment so that defaults (~, ${USER}) do not depend on who runs the tests. */
export const ENV = { USER: 'tester', HOME: '/home/tester', REX_ROOT: `${FIXTURES}sys` } as NodeJS.ProcessEnv;

/** Runs `fn`, expects a ConfigError, and returns it. */
export async function configError(fn: () => unknown): Promise<ConfigError> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}
