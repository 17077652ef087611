/**
 * An adapter, ready to run: its trainable tensors (names, shapes, initial values) and the projection hook
 * that adds its update to the frozen model's linear layers inside a graph.
 *
 * Trainable tensors are graph inputs (never initializers), named `<module>.<suffix>` with the HF module
 * name, e.g. `model.layers.3.self_attn.q_proj.lora_A`. Components of one shape are stacked so that the
 * fused Kronecker computation runs one batched product per shape (see kronecker-mixture.ts).
 */
import { UserError } from '../errors.ts';
import {
  GraphError,
  cast,
  concat,
  linear,
  matmul,
  mul,
  div,
  dropoutMask,
  add,
  reduceSum,
  reshape,
  slice,
  softmax,
  sqrt,
  stopGradient,
  transpose,
  type Graph,
  type Tensor,
} from '../engine/index.ts';
import type { LlamaConfig, ProjectionName } from '../model/config.ts';
import { adapterScale, type AdapterConfig } from './adapter-config.ts';
import { kaimingUniform, smallNormal } from './init.ts';
import { fnv1a } from '../engine/random.ts';
import { kroneckerMixture, type KroneckerGroup } from './kronecker-mixture.ts';
import type { KroneckerShape } from './kronecker-shapes.ts';
import { projectionModuleName } from './targets.ts';
import { planAdapter, type AdapterPlan, type PlannedComponent, type ProjectionPlan } from './planner.ts';

export type TensorGroup = 'default' | 'gate';

/** One trainable adapter tensor. */
export interface AdapterTensor {
  name: string;
  shape: number[];
  /** Optimizer parameter group: gate logits/projections may get their own learning rate. */
  group: TensorGroup;
  init: Float32Array;
}

/** What the model tells the projection hook about the layer it is building (see lib/model). */
export interface ProjectionSite {
  layer: number;
  proj: ProjectionName;
  outFeatures: number;
  inFeatures: number;
}

export type BaseProjection = (x: Tensor) => Tensor;

export interface AdapterRuntimeOptions {
  /** Seed of the initial values. */
  seed?: number;
  /**
   * Row norms of each targeted base weight, by module name (`model.layers.0.self_attn.q_proj`): DoRA starts
   * its magnitudes there and needs ‖W0‖² per row in its forward. Required for DoRA only.
   */
  baseRowNorms?: (module: string) => Float32Array;
}

/** The tensors of one adapted projection and how they are laid out. */
interface TargetLayout {
  module: string;
  projection: ProjectionPlan;
  tensors: AdapterTensor[];
}

/** Kronecker shape groups of a MoKA projection: components of one shape stacked, in first-seen order. */
export function kroneckerGroups(
  components: readonly PlannedComponent[],
): { shape: KroneckerShape; indices: number[] }[] {
  const groups: { shape: KroneckerShape; indices: number[] }[] = [];
  components.forEach((c, i) => {
    if (c.kind !== 'kronecker') throw new Error(`internal: ${c.kind} component in a MoKA plan`);
    const g = groups.find((x) => x.shape.every((d, k) => d === c.shape[k]));
    if (g) g.indices.push(i);
    else groups.push({ shape: c.shape, indices: [i] });
  });
  return groups;
}

export class AdapterRuntime {
  readonly plan: AdapterPlan;
  readonly tensors: AdapterTensor[] = [];
  readonly scale: number;
  private readonly targets = new Map<string, TargetLayout>();

  constructor(
    readonly llama: LlamaConfig,
    readonly config: AdapterConfig,
    private readonly options: AdapterRuntimeOptions = {},
  ) {
    this.plan = planAdapter(llama, config);
    this.scale = adapterScale(config);
    for (const t of this.plan.targets) {
      const projection = this.plan.projections.find((p) => p.projection === t.projection)!;
      const layout: TargetLayout = {
        module: t.name,
        projection,
        tensors: this.tensorsFor(t.name, projection),
      };
      this.targets.set(t.name, layout);
      this.tensors.push(...layout.tensors);
    }
  }

  /** Module names of the adapted projections, in model order. */
  get modules(): string[] {
    return [...this.targets.keys()];
  }

  /** The plan of an adapted projection, or undefined when `module` is not adapted. */
  projectionOf(module: string): ProjectionPlan | undefined {
    return this.targets.get(module)?.projection;
  }

  private tensorsFor(module: string, p: ProjectionPlan): AdapterTensor[] {
    const seed = this.options.seed ?? 0;
    const cfg = this.config;
    const out: AdapterTensor[] = [];
    const zeros = (n: number) => new Float32Array(n);
    const add = (suffix: string, shape: number[], init: Float32Array, group: TensorGroup = 'default') =>
      out.push({ name: `${module}.${suffix}`, shape, group, init });
    const kaiming = (suffix: string, shape: number[], fanIn: number) =>
      kaimingUniform(
        seed,
        `${module}.${suffix}`,
        shape.reduce((a, b) => a * b, 1),
        fanIn,
      );

    switch (cfg.type) {
      case 'moka': {
        kroneckerGroups(p.components).forEach((g, gi) => {
          const [ma, na, mb, nb] = g.shape;
          const k = g.indices.length;
          const aShape = [k, ma, na];
          const bShape = [k, mb, nb];
          const aInit = cfg.init === 'zero-a' ? zeros(k * ma * na) : kaiming(`moka_A.g${gi}`, aShape, na);
          const bInit = cfg.init === 'zero-b' ? zeros(k * mb * nb) : kaiming(`moka_B.g${gi}`, bShape, nb);
          add(`moka_A.g${gi}`, aShape, aInit);
          add(`moka_B.g${gi}`, bShape, bInit);
        });
        this.addGate(module, p, out);
        break;
      }
      case 'mokas': {
        p.components.forEach((c, i) => {
          if (c.kind !== 'block-diagonal') throw new Error('internal: MoKAs plan without block components');
          const [bm, bn] = c.blockShape;
          add(
            `mokas_B.${i}`,
            [bm, bn],
            cfg.init === 'zero' ? zeros(bm * bn) : kaiming(`mokas_B.${i}`, [bm, bn], bn),
          );
        });
        this.addGate(module, p, out);
        break;
      }
      case 'krona': {
        const c = p.components[0]!;
        if (c.kind !== 'lokr') throw new Error('internal: KronA plan without a LoKr component');
        const { w1, w2, w1Rank, w2Rank } = c.factors;
        // PEFT LoKr init: zero-a → w1 (or w1_a) = 0, the rest kaiming; zero-b → w2 (or w2_b) = 0, the rest kaiming.
        if (w1Rank === null) {
          add(
            'lokr_w1',
            [...w1],
            cfg.init === 'zero-a' ? zeros(w1[0] * w1[1]) : kaiming('lokr_w1', [...w1], w1[1]),
          );
        } else {
          const aShape = [w1[0], w1Rank];
          add(
            'lokr_w1_a',
            aShape,
            cfg.init === 'zero-a' ? zeros(w1[0] * w1Rank) : kaiming('lokr_w1_a', aShape, w1Rank),
          );
          add('lokr_w1_b', [w1Rank, w1[1]], kaiming('lokr_w1_b', [w1Rank, w1[1]], w1[1]));
        }
        if (w2Rank === null) {
          add(
            'lokr_w2',
            [...w2],
            cfg.init === 'zero-b' ? zeros(w2[0] * w2[1]) : kaiming('lokr_w2', [...w2], w2[1]),
          );
        } else {
          add('lokr_w2_a', [w2[0], w2Rank], kaiming('lokr_w2_a', [w2[0], w2Rank], w2Rank));
          const bShape = [w2Rank, w2[1]];
          add(
            'lokr_w2_b',
            bShape,
            cfg.init === 'zero-b' ? zeros(w2Rank * w2[1]) : kaiming('lokr_w2_b', bShape, w2[1]),
          );
        }
        break;
      }
      case 'lora':
      case 'dora': {
        const r = cfg.r;
        add('lora_A', [r, p.in], kaiming('lora_A', [r, p.in], p.in));
        add('lora_B', [p.out, r], zeros(p.out * r));
        if (cfg.type === 'dora') {
          const norms = this.options.baseRowNorms?.(module);
          if (!norms)
            throw new UserError('DoRA needs the base weights: load the adapter together with its model');
          if (norms.length !== p.out) {
            throw new Error(
              `internal: ${norms.length} base row norms for ${module}, which has ${p.out} rows`,
            );
          }
          add('lora_magnitude_vector', [p.out], Float32Array.from(norms));
        }
        break;
      }
    }
    return out;
  }

  private addGate(module: string, p: ProjectionPlan, out: AdapterTensor[]): void {
    const cfg = this.config;
    if (cfg.type !== 'moka' && cfg.type !== 'mokas') return;
    const r = p.components.length;
    if (r === 1 || cfg.gate === 'none') return; // a single component has weight 1; 'none' fixes 1/r
    const seed = this.options.seed ?? 0;
    const prefix = cfg.type === 'moka' ? 'moka' : 'mokas';
    if (cfg.gate === 'static') {
      const name = `${module}.${prefix}_gate`;
      const init = cfg.gateInit === 'normal' ? smallNormal(seed, name, r) : new Float32Array(r);
      out.push({ name, shape: [r], group: 'gate', init });
    } else {
      const name = `${module}.${prefix}_gate_proj`;
      const init = cfg.gateInit === 'normal' ? smallNormal(seed, name, r * p.in) : new Float32Array(r * p.in);
      out.push({ name, shape: [r, p.in], group: 'gate', init });
    }
  }

  /**
   * Binds the adapter to a graph: its tensors become graph inputs (created on first use) and `wrap` is the
   * projection hook for the model builder. `inputs()` lists the inputs created, in `tensors` order.
   */
  bind(
    graph: Graph,
    dtype: 'float32' | 'float64' = 'float32',
    opts: { dropoutSeed?: Tensor } = {},
  ): BoundAdapter {
    const inputs = new Map<string, Tensor>();
    const input = (name: string): Tensor => {
      let t = inputs.get(name);
      if (!t) {
        const spec = this.tensors.find((s) => s.name === name);
        if (!spec) throw new GraphError(`adapter has no tensor "${name}"`);
        t = graph.input(name, dtype, spec.shape);
        inputs.set(name, t);
      }
      return t;
    };
    const wrap = (site: ProjectionSite, x: Tensor, base: BaseProjection): Tensor =>
      this.project(projectionModuleName(site.layer, site.proj), x, base, input, opts.dropoutSeed);
    return {
      wrap,
      inputs: () => this.tensors.filter((s) => inputs.has(s.name)).map((s) => inputs.get(s.name)!),
    };
  }

  /**
   * y = base(x) + update for the projection `module` (just base(x) when it is not adapted), reading the
   * adapter's tensors through `tensor(name)`. `bind` supplies graph inputs; tests may supply their own.
   * With a `dropoutSeed` (training) and `dropout` > 0 in the config, the adapter branch sees dropout(x), as in
   * PEFT; the base projection and the gate see x. The mask is drawn in the graph from the seed and the module
   * name, so each projection has its own mask and a given seed always gives the same masks.
   */
  project(
    module: string,
    x: Tensor,
    base: BaseProjection,
    tensor: (name: string) => Tensor,
    dropoutSeed?: Tensor,
  ): Tensor {
    const layout = this.targets.get(module);
    if (!layout) return base(x);
    // Adapter tensors stay float32 (master weights); with float16 activations they are cast where used, and
    // the cast's gradient brings their gradients back to float32.
    const t = (name: string) => {
      const v = tensor(name);
      return v.dtype === x.dtype ? v : cast(v, x.dtype);
    };
    const p = this.config.dropout;
    const xa = dropoutSeed && p > 0 ? mul(x, dropoutMask(x, dropoutSeed, p, fnv1a(module))) : x;
    return this.apply(layout, x, xa, base, (suffix) => t(`${module}.${suffix}`));
  }

  /** x feeds the base projection and the gate; xa (x after dropout, when training with it) the update. */
  private apply(
    layout: TargetLayout,
    x: Tensor,
    xa: Tensor,
    base: BaseProjection,
    t: (suffix: string) => Tensor,
  ): Tensor {
    const constant = (shape: number[], values: ArrayLike<number>) => {
      if (x.dtype === 'float64') return x.graph.constant('float64', shape, Float64Array.from(values));
      const c = x.graph.constant('float32', shape, Float32Array.from(values));
      return x.dtype === 'float32' ? c : cast(c, x.dtype);
    };
    const cfg = this.config;
    const p = layout.projection;
    const s = this.scale;
    const scaled = (u: Tensor) => (s === 1 ? u : mul(u, s));
    switch (cfg.type) {
      case 'moka': {
        const groups = kroneckerGroups(p.components);
        const r = p.components.length;
        if (cfg.gate === 'token' && r > 1) {
          // Token gate: α_t = softmax(x W_gᵀ); components are mixed per token, so each is computed alone.
          const alpha = softmax(linear(x, t('moka_gate_proj')), -1);
          const one = constant([1], [1]);
          let sum: Tensor | null = null;
          let c = 0;
          groups.forEach((g, gi) => {
            const a = t(`moka_A.g${gi}`);
            const b = t(`moka_B.g${gi}`);
            const [ma, na, mb, nb] = g.shape;
            g.indices.forEach((_, k) => {
              const comp: KroneckerGroup = {
                shape: g.shape,
                a: reshape(slice(a, 0, k, k + 1), [1, ma, na]),
                b: reshape(slice(b, 0, k, k + 1), [1, mb, nb]),
              };
              const y = mul(kroneckerMixture(xa, [comp], one, p.out), slice(alpha, -1, c, c + 1));
              sum = sum ? add(sum, y) : y;
              c++;
            });
          });
          return add(base(x), scaled(sum!));
        }
        const alpha = this.mixtureWeights(constant, r, () => t('moka_gate'));
        // Stacked groups take their components' weights in group order.
        const order = groups.flatMap((g) => g.indices);
        const alphaInGroupOrder = order.every((v, i) => v === i) ? alpha : gatherOrder(alpha, order);
        const stacked = groups.map((g, gi) => ({
          shape: g.shape,
          a: t(`moka_A.g${gi}`),
          b: t(`moka_B.g${gi}`),
        }));
        return add(base(x), scaled(kroneckerMixture(xa, stacked, alphaInGroupOrder, p.out)));
      }
      case 'mokas': {
        const r = p.components.length;
        const alpha =
          cfg.gate === 'token' && r > 1
            ? softmax(linear(x, t('mokas_gate_proj')), -1)
            : this.mixtureWeights(constant, r, () => t('mokas_gate'));
        let sum: Tensor | null = null;
        p.components.forEach((c, i) => {
          if (c.kind !== 'block-diagonal') throw new Error('internal');
          const y = blockDiagonal(xa, t(`mokas_B.${i}`), c.blocks, p.out);
          const w = cfg.gate === 'token' && r > 1 ? slice(alpha, -1, i, i + 1) : slice(alpha, 0, i, i + 1);
          const term = mul(y, w);
          sum = sum ? add(sum, term) : term;
        });
        return add(base(x), scaled(sum!));
      }
      case 'krona': {
        const c = p.components[0]!;
        if (c.kind !== 'lokr') throw new Error('internal');
        const { w1, w2, w1Rank, w2Rank } = c.factors;
        // Low-rank factors are formed at factor size (never the d_out x d_in update).
        const w1t = w1Rank === null ? t('lokr_w1') : matmul(t('lokr_w1_a'), t('lokr_w1_b'));
        const w2t = w2Rank === null ? t('lokr_w2') : matmul(t('lokr_w2_a'), t('lokr_w2_b'));
        const one = constant([1], [1]);
        const group: KroneckerGroup = {
          shape: [w1[0], w1[1], w2[0], w2[1]],
          a: reshape(w1t, [1, ...w1]),
          b: reshape(w2t, [1, ...w2]),
        };
        return add(base(x), scaled(kroneckerMixture(xa, [group], one, p.out)));
      }
      case 'lora':
        return add(base(x), scaled(linear(linear(xa, t('lora_A')), t('lora_B'))));
      case 'dora': {
        // y = c ⊙ (x W0ᵀ + s·x Aᵀ Bᵀ), c = m / ‖W0 + sBA‖_row with the norm detached (DoRA §4.3).
        // ‖W0 + sBA‖²_row = ‖W0‖² + 2s·rowsum(B ⊙ (A W0ᵀ)ᵀ) + s²·rowsum((B·AAᵀ) ⊙ B): no m×n matrix is formed,
        // and A W0ᵀ goes through the base projection, so a 4-bit base works unchanged (QDoRA).
        const a = t('lora_A');
        const b = t('lora_B');
        const n0 = constant([p.out], rowNormsSquared(this.options.baseRowNorms!(layout.module)));
        const aw = transpose(base(a), [1, 0]); // [out, r]
        const cross = reduceSum(mul(b, aw), 1);
        const gram = matmul(a, a, { transB: true }); // [r, r]
        const quad = reduceSum(mul(matmul(b, gram), b), 1);
        const exactNorm = sqrt(add(add(n0, mul(cross, 2 * s)), mul(quad, s * s)));
        const norm = cfg.detachNorm ? stopGradient(exactNorm) : exactNorm;
        const c = div(t('lora_magnitude_vector'), norm);
        return mul(add(base(x), scaled(linear(linear(xa, a), b))), c);
      }
    }
  }

  /** α for a static gate (softmax of the logits), 1 for a single component, 1/r for gate "none". */
  private mixtureWeights(
    constant: (shape: number[], values: ArrayLike<number>) => Tensor,
    r: number,
    logits: () => Tensor,
  ): Tensor {
    const cfg = this.config as Extract<AdapterConfig, { type: 'moka' | 'mokas' }>;
    if (r === 1) return constant([1], [1]);
    if (cfg.gate === 'none') return constant([r], new Array<number>(r).fill(1 / r));
    return softmax(logits(), 0);
  }
}

export interface BoundAdapter {
  wrap: (site: ProjectionSite, x: Tensor, base: BaseProjection) => Tensor;
  inputs: () => Tensor[];
}

/** x·kron(I_a, B)ᵀ: each of the `a` blocks of x is multiplied by B — one flattened GEMM. */
export function blockDiagonal(x: Tensor, b: Tensor, a: number, m: number): Tensor {
  const n = x.shape[x.rank - 1] as number;
  const lead = x.shape.slice(0, -1);
  const flat = reshape(x, [-1, n / a]);
  return reshape(linear(flat, b), [...lead, m]);
}

function gatherOrder(alpha: Tensor, order: number[]): Tensor {
  return concat(
    order.map((i) => slice(alpha, 0, i, i + 1)),
    0,
  );
}

function rowNormsSquared(norms: Float32Array): Float32Array {
  return norms.map((v) => v * v);
}

/** Creates the runtime for a model and adapter config. */
export function createAdapterRuntime(
  llama: LlamaConfig,
  config: AdapterConfig,
  options: AdapterRuntimeOptions = {},
): AdapterRuntime {
  return new AdapterRuntime(llama, config, options);
}
