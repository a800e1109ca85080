/**
 * Test switches: environment variables that make rexd misbehave on purpose,
 * so that one machine can play hosts that differ (a file "only on the origin",
 * an image damaged in transit, a slow link). A production daemon must never
 * read them from an environment it inherited, so they are honoured only after
 * `rexd --test-mode`, which the daemon announces in its start-up log line.
 * docs/man/rexd.8.md lists them.
 */

/** Every test switch rexd knows. */
export const TEST_SWITCHES = {
  /** Paths under this prefix count as absent on the executor (and are sent by the origin as if only it had them). */
  REX_EXEC_TEST_HIDE: 'files under this prefix count as absent here',
  /** '1': the executor flips a byte of each rfork image it receives; 'stream': of a streamed image, before its sha256 is checked. */
  REX_TEST_CORRUPT_IMAGE: 'damage each rfork image received ("stream": a streamed image before its sha256 is checked)',
  /** Milliseconds the origin waits before each FILE chunk it sends (at most 1000). */
  REX_TEST_FETCH_DELAY_MS: 'slow down program transfers',
  /** A JSON file (src/cpu/wire.ts profileToJson): the CPU profile rexd advertises instead of its own. */
  REX_TEST_CPU_PROFILE: 'advertise this CPU profile instead of the host\'s',
  /** '1': placement by load never picks the origin itself (an EXEC without a host goes to a peer). */
  REX_TEST_PLACE_ELSEWHERE: 'placement never picks this host',
} as const;

/** The name of a test switch. */
export type TestSwitch = keyof typeof TEST_SWITCHES;

let enabled = false;

/** Turns test switches on for this process (rexd --test-mode). */
export function enableTestMode(): void {
  enabled = true;
}

/** True after {@link enableTestMode}. */
export function testModeEnabled(): boolean {
  return enabled;
}

/** The switch's value in test mode; undefined otherwise, whatever the environment says. */
export function testSwitch(name: TestSwitch): string | undefined {
  if (!enabled) return undefined;
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** Test switches set in the environment (for the warning a daemon not in test mode gives when it ignores them). */
export function testSwitchesInEnvironment(): TestSwitch[] {
  return (Object.keys(TEST_SWITCHES) as TestSwitch[]).filter((k) => process.env[k] !== undefined && process.env[k] !== '');
}
