/**
 * The REX configuration: rex.rc and its XML form, read into one validated
 * RexConfig that remembers where every value came from (docs/CONFIG.md).
 */
export type { AutoTransfer, ConfigDiagnostic, LoadedConfig, LogLevel, PlacementPolicy, ProgramEntry, RexConfig, ServerEntry, Source } from './types.js';
export { ConfigError, formatDiagnostic } from './types.js';
export { DEFAULT_PORT, KEYS, KEY_SPECS, configSchema, didYouMean, expandPath, formatDuration, isRexName, parseDuration, sanitizeHostName } from './keys.js';
export { defaultConfig, type NormalizeEnv } from './normalize.js';
export { parseRc, scanRc, type ConfigItem, type IncludeDirective, type ScanResult } from './rc.js';
export { parseXmlConfig, scanXml } from './xml.js';
export { MAX_INCLUDE_DEPTH, configCandidates, findConfigFile, loadConfig, systemIncludeDirs, userView, hostTrustDir, type LoadOptions, type LookupOptions } from './load.js';
export { clientAllowed, normalizeAddress, type ClientMatchOptions } from './clients.js';
export { formatConfig, formatSource, toRcText } from './format.js';
