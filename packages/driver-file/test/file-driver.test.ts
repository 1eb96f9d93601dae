import { runDriverConformance } from '@replikit/core/testing';
import { createTempDriver, fileFixtures } from './helpers/temp-root.js';

runDriverConformance({ name: 'file', create: () => createTempDriver(), fixtures: fileFixtures });
