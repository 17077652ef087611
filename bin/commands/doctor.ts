/** `moka doctor`: what this machine offers the engine (runtime versions, execution providers). */
import type { Command } from 'commander';
import * as ort from 'onnxruntime-node';
import { nativeKernelsUnavailableReason, nativeMemorySettings } from '../../lib/engine/native-session.ts';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description(
      "show the Node and ONNX Runtime versions, which execution providers are installed, and whether moka's native kernels are built",
    )
    .option('--json', 'print JSON instead of a table')
    .action((opts: { json?: boolean }) => {
      const backends = ort.listSupportedBackends();
      const report = {
        node: process.version,
        onnxruntime: ort.env.versions.common,
        platform: `${process.platform}-${process.arch}`,
        providers: backends.map((b) => ({ name: b.name, bundled: b.bundled })),
        // The NF4 generation kernel (native/; `npm run build:native`): without it NF4 generation is slower.
        nativeKernels: nativeKernelsUnavailableReason() ?? 'loaded',
        // What the addon changed about memory (native/memory-settings.cc); null without the addon.
        nativeMemory: nativeMemorySettings(),
      };
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        return;
      }
      process.stdout.write(`node          ${report.node}\n`);
      process.stdout.write(`onnxruntime   ${report.onnxruntime}\n`);
      process.stdout.write(`platform      ${report.platform}\n`);
      process.stdout.write(`native        ${report.nativeKernels}\n`);
      if (report.nativeMemory) {
        const off = report.nativeMemory.memReuseOff;
        process.stdout.write(
          `memory        ORT planner buffer reuse ${off ? 'off' : 'on (its switch was not found)'}\n`,
        );
      }
      for (const p of report.providers) {
        process.stdout.write(
          `provider      ${p.name.padEnd(9)} ${p.bundled ? 'bundled' : 'needs install'}\n`,
        );
      }
    });
}
