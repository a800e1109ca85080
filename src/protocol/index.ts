/** Wire protocol v1 (docs/PROTOCOL.md): constants, frames, typed messages, connections. */
export * from './constants.js';
export * from './frame.js';
export * from './messages.js';
export * from './connection.js';
export * from './json.js';
export * from './signals.js';
