// Runs in every test worker before its test file (vitest setupFiles).
import { configureProperties } from './property.js';

configureProperties();
